from cxrlens.cli import main

main()
