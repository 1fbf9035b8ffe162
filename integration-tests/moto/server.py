"""moto_server with what the pillars need and moto 5.2 lacks, each behaving like AWS:

- ecr_layers: ECR's layer upload API and its PutImage checks;
- codecommit_branches: CodeCommit's default branch and branches, read from the git stand-in.

Run as `python server.py -H 127.0.0.1 -p PORT`, with PILLAR_CODECOMMIT_REPOS_DIR set.
"""

import sys

from moto.server import main

import codecommit_branches
import ecr_layers

if __name__ == "__main__":
    ecr_layers.install()
    codecommit_branches.install()
    sys.exit(main())
