from atencion.cli import main

main()
