import sys

from cqrs.cli import main

sys.exit(main())
