"""moto_server with what the pillars need and moto 5.2 lacks, each behaving like AWS:

- ecr_layers: ECR's layer upload API and its PutImage checks;
- codecommit_branches: CodeCommit's default branch and branches, read from the git stand-in;
- cloudformation_types: the resource types of the pillars' stacks moto's CloudFormation lacks
  (importing it registers them).

Run as `python server.py -H 127.0.0.1 -p PORT`, with PILLAR_CODECOMMIT_REPOS_DIR set.
"""

import sys

from moto.server import main

import cloudformation_types  # noqa: F401  (registers its types)
import codecommit_branches
import ecr_layers

if __name__ == "__main__":
    ecr_layers.install()
    codecommit_branches.install()
    sys.exit(main())
