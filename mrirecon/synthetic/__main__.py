import sys

from .generator import main

main(sys.argv[1:])
