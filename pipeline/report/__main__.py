"""`python -m pipeline.report`: see pipeline/report/__init__.py."""
from pipeline import stage
from pipeline.report import main

if __name__ == "__main__":
    stage.cli(main)
