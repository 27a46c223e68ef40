from freeseg.cli import main

main()
