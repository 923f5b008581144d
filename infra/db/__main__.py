"""`python -m infra.db migrate` applies the migrations to the database the settings name."""

import sys

from infra.db.migrate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
