"""Stage 1: count the new drawings per category."""

from doodle.drawings import list_drawings
from doodle.pipeline.runner import StageContext, StageOutput, stage_main


def run(context: StageContext) -> StageOutput:
    counts = {name: len(pngs) for name, pngs in list_drawings(context.settings.img_data_location).items()}
    return {"counts": counts, "total": sum(counts.values())}


if __name__ == "__main__":
    stage_main("scan", run)
