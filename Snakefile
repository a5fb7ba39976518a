# Snakemake workflow: the same stage CLIs and output paths as dvc.yaml.
#   snakemake --cores 4 --resources gpu=1        (profiles/default sets these as defaults)
import json
from glob import glob
from snakemake.utils import validate
from pipeline import params as P

# params.yaml is read by the stages themselves, so it is loaded here from the same file rather
# than with `configfile:` (whose --config overrides the stages would never see).
config.update(P.load("params.yaml"))        # one clear line naming the bad key, before any job
validate(config, P.SCHEMA_PATH)
EXPERIMENTS = list(config["experiments"])
DATASETS = sorted({config["experiments"][e]["dataset"] for e in EXPERIMENTS})

def dataset_of(w):
    return config["experiments"][w.exp]["dataset"]

wildcard_constraints:
    ds="[a-z][a-z0-9_]*",
    exp="[a-z][a-z0-9_]*",

rule all:
    input: "results/report.html"

# Reruns when the data set's source entry changes (Snakemake's params trigger), not on other edits.
# A folder source's own directory or archive (e.g. ../shared/data/cifar10-jpeg.tar.gz) is an input:
# editing it reruns download. Published archives are pinned by their md5 in the source entry.
def local_source(w):
    source = config["datasets"][w.ds]["source"]
    return [source["path"]] if source["kind"] == "folder" else []

rule download:
    input: local=local_source
    output: directory("data/raw/{ds}")
    params: source=lambda w: json.dumps(config["datasets"][w.ds]["source"], sort_keys=True)
    log: "logs/download/{ds}.log"
    shell: "python -m pipeline.download --params params.yaml --dataset {wildcards.ds} --out {output} --log {log}"

rule prepare:
    input: raw="data/raw/{ds}", code=["pipeline/prepare.py", *glob("pipeline/sources/*.py")]
    output: directory("data/prepared/{ds}")
    params: dataset=lambda w: json.dumps(config["datasets"][w.ds], sort_keys=True)
    log: "logs/prepare/{ds}.log"
    shell: "python -m pipeline.prepare --params params.yaml --dataset {wildcards.ds} --raw {input.raw} --out {output} --log {log}"

rule stats:
    input: prepared="data/prepared/{ds}", code="pipeline/stats.py"
    output: "data/stats/{ds}.json"
    log: "logs/stats/{ds}.log"
    shell: "python -m pipeline.stats --prepared {input.prepared} --out {output} --log {log}"

# The experiment's resolved config (defaults + overrides); train depends on this file only.
rule configure:
    output: "results/experiments/{exp}/config.json"
    params: resolved=lambda w: json.dumps(P.experiment_config(config, w.exp), sort_keys=True)
    log: "logs/configure/{exp}.log"
    shell: "python -m pipeline.configure --params params.yaml --experiment {wildcards.exp} --out {output} --log {log}"

def pretrained_checkpoint(w):
    """`pretrained: <experiment>` makes that experiment's checkpoint an input (none for null / imagenet).
    P.load has already checked that it names an experiment of this study."""
    parent = P.experiment_config(config, w.exp)["pretrained"]
    return [] if parent in (None, "imagenet") else f"results/experiments/{parent}/model.pt"

rule train:
    input:
        config="results/experiments/{exp}/config.json",
        prepared=lambda w: f"data/prepared/{dataset_of(w)}",
        stats=lambda w: f"data/stats/{dataset_of(w)}.json",
        pretrained=pretrained_checkpoint,
        code=["pipeline/train.py", "pipeline/engine.py", "pipeline/data.py", "pipeline/augment.py",
              "pipeline/recipes.py", "pipeline/layers.py", *glob("pipeline/models/*.py")],
    output: model="results/experiments/{exp}/model.pt", history="results/experiments/{exp}/history.csv", metrics="results/experiments/{exp}/train.json", layers="results/experiments/{exp}/layers.csv"
    resources: gpu=1
    log: "logs/train/{exp}.log"
    shell: "python -m pipeline.train --config {input.config} --prepared {input.prepared} --stats {input.stats} --model {output.model} --history {output.history} --metrics {output.metrics} --layers {output.layers} --experiments results/experiments --log {log}"

rule evaluate:
    input:
        model="results/experiments/{exp}/model.pt",
        prepared=lambda w: f"data/prepared/{dataset_of(w)}",
        code=["pipeline/evaluate.py", "pipeline/engine.py"],
    output: metrics="results/experiments/{exp}/test.json", predictions="results/experiments/{exp}/predictions.csv", confusion="results/experiments/{exp}/confusion.csv"
    resources: gpu=1
    log: "logs/evaluate/{exp}.log"
    shell: "python -m pipeline.evaluate --model {input.model} --prepared {input.prepared} --metrics {output.metrics} --predictions {output.predictions} --confusion {output.confusion} --log {log}"

rule report:
    input:
        expand("results/experiments/{exp}/{f}", exp=EXPERIMENTS,
               f=["train.json", "history.csv", "test.json", "predictions.csv", "confusion.csv"]),
        prepared=expand("data/prepared/{ds}", ds=DATASETS),
        stats=expand("data/stats/{ds}.json", ds=DATASETS),
        code=[*glob("pipeline/report/*.py"), "pipeline/templates/report.html.j2"],
    output: "results/report.html"
    params: experiments=lambda w: json.dumps(config["experiments"], sort_keys=True)
    log: "logs/report.log"
    shell: "python -m pipeline.report --params params.yaml --results results/experiments --prepared data/prepared --stats data/stats --logs logs --out {output} --log {log}"
