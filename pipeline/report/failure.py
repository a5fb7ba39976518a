"""`python -m pipeline.report.failure`: the report after a failed train, evaluate or replicate stage
(pipeline.report.render_despite_failure), in a process of its own: the report's code is no part of
what those stages compute, so it is none of their dependencies."""
from pipeline import stage
from pipeline.report import render_despite_failure

if __name__ == "__main__":
    stage.setup_logging(None)
    render_despite_failure()
