"""LoRA export: after training on an HF base, the merged HF model and the PEFT adapter applied by
transformers + peft to the HF base both reproduce Megatron's LoRA forward (fp32, ≤ 1e-5), at the
TP the adapters were trained with and after training at TP=2.
"""

from __future__ import annotations

import json

import pytest
import torch

from msm_megatron.cli import resolve_config
from msm_megatron.convert.lora_export import export_merged, export_peft
from tests.helpers.launch import train

pytestmark = pytest.mark.distributed

TRAIN = ["lora.rank=4", "lora.alpha=8", "train.steps=3", "train.global_batch_size=8",
         "optim.lr=2e-2", "optim.min_lr=0", "checkpoint.save_interval=null"]


@pytest.fixture(scope="module")
def hf_base(toy_config, tmp_path_factory):
    """A random HF model with the toy config's architecture (fp32, large init)."""
    import transformers

    from msm_megatron.models.hf_config import hf_config_from_model

    cfg = resolve_config(str(toy_config), [])
    fields = hf_config_from_model(cfg.model)
    model_type = fields.pop("model_type")
    fields.pop("architectures", None)
    fields["initializer_range"] = 0.1
    config = transformers.AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("hf_base") / "model"
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens).logits[0].float()


@pytest.mark.parametrize("nproc,layout", [(1, []), (2, ["parallel.tp=2"])], ids=["tp1", "tp2"])
def test_merged_and_peft_exports_match_megatron(toy_config, hf_base, tmp_path, nproc, layout):
    import peft
    import transformers

    run = tmp_path / "run"
    train(toy_config, [*TRAIN, *layout, f"checkpoint.load={hf_base}", f"train.run_dir={run}"],
          nproc, tmp_path / "train.log")
    iter_dir = run / "checkpoints" / "iter_0000003"
    cfg = resolve_config(str(toy_config), [])
    tokens = torch.randint(0, cfg.model.vocab_size, (1, 24),
                           generator=torch.Generator().manual_seed(5))
    torch.save(tokens, tmp_path / "tokens.pt")
    train(toy_config, [str(iter_dir), str(tmp_path / "tokens.pt"), str(tmp_path / "meg.pt"),
                       *TRAIN, *layout], nproc, tmp_path / "logits.log",
          entry=("tests.helpers.lora_logits",))
    megatron = torch.load(tmp_path / "meg.pt", weights_only=True)

    merged = export_merged(iter_dir, tmp_path / "merged", progress=False)
    merged_model = transformers.AutoModelForCausalLM.from_pretrained(merged,
                                                                     dtype=torch.float32)
    adapter = export_peft(iter_dir, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and len(config["target_modules"]) == 7
    assert config["base_model_name_or_path"] == str(hf_base.resolve())  # what vLLM loads
    base = transformers.AutoModelForCausalLM.from_pretrained(hf_base, dtype=torch.float32)
    plain = _hf_logits(base, tokens)
    peft_model = peft.PeftModel.from_pretrained(base, adapter)
    with_adapter = _hf_logits(peft_model, tokens)
    # the same tensor names and shapes peft itself writes (what vLLM's LoRA loader reads)
    from safetensors.torch import load_file

    peft_model.save_pretrained(tmp_path / "resaved")
    ours, theirs = (load_file(str(d / "adapter_model.safetensors"))
                    for d in (adapter, tmp_path / "resaved"))
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}

    assert (megatron - plain).abs().max() > 1e-3  # the adapters learned something
    assert (_hf_logits(merged_model, tokens) - megatron).abs().max() <= 1e-5
    assert (with_adapter - megatron).abs().max() <= 1e-5
    # `msm convert export <run>` (what the pipeline's export stage runs) merges LoRA runs
    from safetensors.torch import load_file

    from msm_megatron.convert.export import export_run

    via_run = export_run(run, out_dir=tmp_path / "via_run", progress=False)
    for shard in sorted(merged.glob("*.safetensors")):
        a, b = load_file(str(shard)), load_file(str(via_run / shard.name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
