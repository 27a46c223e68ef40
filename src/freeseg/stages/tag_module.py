"""Stage 0a, for worlds without a pretrained encoder: caption-tag pretraining of a small ViT.

The paper freezes a DINO ViT-B/8. No pretrained weights exist for the generated world, so
a small ViT is first trained here with an objective that uses no masks: predict which
caption words (CLIP BPE tokens) occur in an image's caption from its class token (multi-
label, softmax cross-entropy) and, optionally, from its LSE-pooled patch tokens, so that the
patch tokens the ITSM is made of carry the words too. Its ``state_dict()`` is exported in
timm's format and then frozen by stage 0 exactly as DINO's weights are
(``FrozenViT(checkpoint=...)``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt
from timm.data import Mixup
from timm.models.vision_transformer import VisionTransformer
from timm.utils import ModelEmaV3
from torch import nn

from freeseg.data.atomic import atomic_path
from freeseg.data.classes import load_classes
from freeseg.data.segsets import image_labels
from freeseg.data.tokenizer import ClipTokenizer
from freeseg.models.image_encoder import create_vit, encode_with_attention
from freeseg.stages.schedules import schedule_steps, warmup_cosine


def caption_tags(input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Multi-hot bag of caption tokens: ``(B, L)`` ids → ``(B, V)`` float, specials removed.

    Id 0 (padding), and the two largest ids (CLIP's start and end tokens) are not tags.
    """
    tags = torch.zeros(input_ids.shape[0], vocab_size, device=input_ids.device)
    tags.scatter_(1, input_ids, 1.0)
    tags[:, 0] = 0.0
    tags[:, vocab_size - 2 :] = 0.0
    return tags


def lse_pool(logits: torch.Tensor, r: float, dim: int = 1) -> torch.Tensor:
    """Log-sum-exp pooling (Pinheiro & Collobert 2015) of per-patch logits over ``dim``.

    LSE_r(z) = (1/r) log((1/N) Σ_n exp(r z_n)): the mean of z as r → 0, its max as r → ∞.
    """
    n = logits.shape[dim]
    return (torch.logsumexp(r * logits, dim=dim) - math.log(n)) / r


def attention_guided_drop(
    tokens: torch.Tensor, attn: torch.Tensor, top: float, keep: float, prefix: int = 1
) -> torch.Tensor:
    """Drop the most attended patch tokens, then keep a random share of the rest.

    The ``ceil(top · N)`` patches with the highest class-token attention ``attn`` are always
    dropped (the Attention-based Dropout Layer of Choe & Shim 2019: the class token must find
    the object's other parts); of the other patches, ``max(1, int(keep · N))`` chosen at random
    are kept, as timm's ``PatchDropout`` keeps them. Prefix tokens (the class token) are kept.

    Args:
        tokens: ``(B, prefix + N, C)`` after the position embedding.
        attn: ``(B, N)`` class-token attention over the patches.
        top: share of the patches dropped for their attention, in [0, 1).
        keep: share of all N patches kept; at most the share left after ``top``.

    Returns:
        ``(B, prefix + K, C)``.
    """
    n = attn.shape[1]
    n_top, n_keep = math.ceil(top * n), max(1, int(keep * n))
    if n_keep > n - n_top:
        raise ValueError(f"keeping {n_keep} of {n} patches after dropping the top {n_top}")
    noise = torch.rand(attn.shape, device=attn.device)
    if n_top:
        noise.scatter_(1, attn.topk(n_top, dim=1).indices, 2.0)  # past every random value
    kept = noise.argsort(dim=1)[:, :n_keep] + prefix
    patches = tokens.gather(1, kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return torch.cat([tokens[:, :prefix], patches], dim=1)


def spread_tags(tags: torch.Tensor) -> torch.Tensor:
    """Each caption's tags as a distribution: rows divided by their sum (empty rows stay 0)."""
    counts = tags.sum(1, keepdim=True)
    return tags / torch.where(counts > 0, counts, torch.ones_like(counts))


def tag_loss(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against the caption's tags spread uniformly.

    L = −Σ_v (y_v / Σy) log softmax(z)_v, averaged over the batch: the multi-label loss of
    hashtag pretraining (Mahajan et al. 2018). Unlike one binary loss per vocabulary entry,
    the ~49k never-seen tokens are pushed down together by the softmax, so learning starts
    at once. Captions without any tag contribute nothing.
    """
    per_image = -(spread_tags(tags) * F.log_softmax(logits, dim=1)).sum(1)
    return per_image.sum() / (tags.sum(1) > 0).sum().clamp_min(1)


class TagPretrainModule(pl.LightningModule):
    """Train a small ViT to predict its caption's words; export it for stage 0.

    Args:
        model_name: timm ViT name (architecture only, random init).
        img_size: training input size.
        stem: ``conv`` (a strided conv stem, learns faster from scratch) or ``patch``.
        model_kwargs: timm ``VisionTransformer`` overrides (patch_size, embed_dim, depth, ...).
        export: where to write the encoder's timm-format ``state_dict`` at the end of fit.
        classes: class names used only for the validation mAP (tag scores of class names).
        lr: AdamW learning rate; weight_decay: AdamW weight decay.
        context_length: caption length in tokens (the image-caption data module tokenises with
            this module's tokenizer).
        patch_loss_weight: weight of a second tag loss on the patch tokens (0: off). Each
            patch token gets tag logits from the same head, restricted to the tokens present
            in the batch (in-batch negatives), pooled over the grid by LSE with
            ``patch_lse_r``, and scored like the class token's: patch tokens then carry the
            image's words where its objects are, as DINO's patch tokens carry semantics.
        patch_lse_r: sharpness of the LSE pooling (small: mean over patches, large: max).
        negatives: the words each caption's tags compete with in the class token's softmax.
            ``vocabulary``: all ~49k BPE tokens. ``batch``: only the tokens present in some
            caption of the batch (in-batch negatives, as the patch loss has them): a few hundred
            words, and only the words the batch holds get a gradient.
        ema: decay of an exponential moving average of the ViT's and the head's weights
            (timm's ``ModelEmaV3``), updated after every optimizer step; when set, validation
            reads and ``export`` writes the averaged ViT, as DINO ships its teacher, an average
            of its student. 0: off, the trained weights themselves.
        attention_drop: share of the patch tokens dropped in every training forward for
            having the highest class-token attention (from a gradient-free pass of the whole
            image), before the random ``patch_drop_rate`` of ``model_kwargs`` is applied to
            the rest (`attention_guided_drop`); 0: random patch dropout alone.
        cutmix: α of CutMix's Beta(α, α) box share (Yun et al. 2019; `mixed`): each training
            image gets a box of another pasted in and predicts both captions' tags in
            proportion to the area each keeps, which rewards attending to whole objects (the
            cue CutMix gives weakly supervised localisation); 0: off.
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        img_size: PositiveInt = 64,
        stem: Literal["patch", "conv"] = "conv",
        model_kwargs: dict | None = None,
        export: str | None = None,
        classes: str = "voc",
        lr: PositiveFloat = 1e-3,
        weight_decay: NonNegativeFloat = 0.05,
        context_length: PositiveInt = 77,
        patch_loss_weight: NonNegativeFloat = 0.0,
        patch_lse_r: PositiveFloat = 5.0,
        attention_drop: NonNegativeFloat = 0.0,
        negatives: Literal["vocabulary", "batch"] = "vocabulary",
        ema: ClosedUnitInterval = 0.0,
        cutmix: NonNegativeFloat = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        drop_rate = float((model_kwargs or {}).get("patch_drop_rate", 0.0))
        if attention_drop and attention_drop > drop_rate:
            raise ValueError(
                f"attention_drop {attention_drop} drops more of the patches than "
                f"model_kwargs.patch_drop_rate {drop_rate} lets go (it must be at most that)"
            )
        self.vit = create_vit(model_name, img_size, stem, model_kwargs)
        self.tokenizer = ClipTokenizer(context_length)
        self.vocab_size = int(self.tokenizer.vocab_size)
        self.head = nn.Linear(self.vit.embed_dim, self.vocab_size)
        self.classes = load_classes(classes)
        self._class_tokens = self._name_tokens()
        # averages, never trained: no gradient, and not among the optimizer's parameters
        self.vit_ema = ModelEmaV3(self.vit, decay=ema).requires_grad_(False) if ema > 0 else None
        self.head_ema = ModelEmaV3(self.head, decay=ema).requires_grad_(False) if ema > 0 else None
        self._ema_step = 0  # the optimizer step the averages were last updated after
        # CutMix (timm's Mixup, one box per image): the tag targets are mixed by pasted area
        self.cutmix = (
            Mixup(
                mixup_alpha=0.0,
                cutmix_alpha=cutmix,
                mode="elem",
                label_smoothing=0.0,
                num_classes=self.vocab_size,
                multi_label=True,
            )
            if cutmix > 0
            else None
        )

    def evaluated(self) -> tuple[VisionTransformer, nn.Module]:
        """The ViT and head that validation reads and ``export`` writes (averaged if ``ema``)."""
        if self.vit_ema is None or self.head_ema is None:
            return self.vit, self.head
        return cast(VisionTransformer, self.vit_ema.module), self.head_ema.module

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # once per optimizer step (global_step counts them; with gradient accumulation several
        # batches end on one); the first update copies the weights
        if self.vit_ema is None or self.head_ema is None or self.global_step == self._ema_step:
            return
        self._ema_step = self.global_step
        self.vit_ema.update(self.vit, step=self.global_step)
        self.head_ema.update(self.head, step=self.global_step)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _name_tokens(self) -> list[list[torch.Tensor]]:
        """Per class, per name: the BPE ids of the name (without start/end tokens)."""
        out = []
        for names in self.classes.names:
            ids = self.tokenizer(list(names))
            keep = (ids > 0) & (ids < self.vocab_size - 2)
            out.append([row[k] for row, k in zip(ids, keep, strict=True)])
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → tag logits ``(B, V)`` from the class token."""
        return self.head(self.vit.forward_features(images)[:, 0])

    def _present_logits(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The head's logits of the vocabulary entries ``present`` only, ``(..., len(present))``."""
        return x @ self.head.weight[present].t() + self.head.bias[present]

    def class_token_loss(self, cls: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Tag loss of the class token's logits, against the configured ``negatives``."""
        if self.hparams["negatives"] == "vocabulary":
            return tag_loss(self.head(cls), tags)
        present = tags.any(0).nonzero().squeeze(1)
        if present.numel() == 0:
            return cls.sum() * 0.0
        return tag_loss(self._present_logits(cls, present), tags[:, present])

    def patch_tag_loss(self, patches: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Tag loss of the LSE-pooled patch logits over the batch's present tokens."""
        present = tags.any(0).nonzero().squeeze(1)
        if present.numel() == 0:
            return patches.sum() * 0.0
        logits = self._present_logits(patches, present)
        pooled = lse_pool(logits, self.hparams["patch_lse_r"], dim=1)
        return tag_loss(pooled, tags[:, present])

    def training_features(self, images: torch.Tensor) -> torch.Tensor:
        """The ViT's output tokens in a training forward (patch dropout as configured)."""
        top = self.hparams["attention_drop"]
        if top <= 0:
            return self.vit.forward_features(images)
        vit, drop = self.vit, self.vit.patch_drop
        training = drop.training
        with torch.no_grad():
            drop.eval()  # the whole image: PatchDropout passes every token through
            try:
                attn = encode_with_attention(vit, images).attn
            finally:
                drop.train(training)
        keep = 1.0 - float(getattr(drop, "prob", 0.0))
        x = vit._pos_embed(vit.patch_embed(images))
        x = attention_guided_drop(x, attn, top, keep, prefix=vit.num_prefix_tokens)
        return vit.norm(vit.blocks(vit.norm_pre(x)))

    def mixed(self, images: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CutMix of a training batch when ``cutmix`` is set: ``(images, tag targets)``.

        Image i gets a random box of image B − 1 − i pasted in (timm's ``Mixup``, one box per
        image, λ_i ~ Beta(α, α) corrected to the box as clipped); its target becomes
        λ_i · t_i / Σt_i + (1 − λ_i) · t_j / Σt_j, the two captions' tag distributions weighted
        by the share of the image each one keeps. A batch of odd size is left as it is.
        """
        if self.cutmix is None or len(images) % 2:
            return images, tags
        return self.cutmix(images.clone(), spread_tags(tags))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, tags = self.mixed(batch["image"], caption_tags(batch["input_ids"], self.vocab_size))
        feats = self.training_features(images)
        loss = self.class_token_loss(feats[:, 0], tags)
        weight = self.hparams["patch_loss_weight"]
        if weight > 0:
            patch_loss = self.patch_tag_loss(feats[:, self.vit.num_prefix_tokens :], tags)
            self.log("train/patch_loss", patch_loss, batch_size=len(tags))
            loss = loss + weight * patch_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(tags))
        return loss

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class score = max over names of the mean log-odds of the name's tokens, ``(B, C)``."""
        cols = []
        for names in self._class_tokens:
            per_name = [logits[:, ids.to(logits.device)].mean(1) for ids in names if len(ids)]
            cols.append(torch.stack(per_name, 1).amax(1))
        return torch.stack(cols, 1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Tag scores of the class names, and A (for the attention fit), in one pass."""
        masks = [m.long() for m in batch["mask"]]
        vit, head = self.evaluated()
        enc = encode_with_attention(vit, batch["image"])
        scores = self.class_scores(head(enc.cls_token))
        labels = image_labels(masks, self.num_classes)
        return {
            "scores": scores,
            "labels": labels,
            "attn": enc.attn,
            "grid": enc.grid,
            "target": masks,
        }

    def configure_optimizers(self) -> Any:
        trained = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trained, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        total = schedule_steps(self.trainer)
        schedule = warmup_cosine(optimizer, total, warmup_steps=total // 20)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def export_encoder(self) -> None:
        """Write the encoder's timm-format ``state_dict`` to ``export`` (atomically)."""
        if self.hparams["export"] and self.trainer.is_global_zero:
            with atomic_path(self.hparams["export"]) as tmp:
                torch.save(self.evaluated()[0].state_dict(), tmp)

    def on_train_epoch_end(self) -> None:
        # Every epoch, so an interrupted run still leaves the last complete encoder.
        self.export_encoder()
