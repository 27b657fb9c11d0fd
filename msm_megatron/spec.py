"""Model Spec loading: one text file with ``{model_name}`` and ``{provider_name}`` placeholders.

The spec is text, never code: placeholders are substituted by name, nothing in it is evaluated.
Every problem is reported before any LLM request is made, naming the file, the line and the fix.

Example::

    spec = load_spec("examples/spec/qwen_spec.txt", model_name="Qwen", provider_name="Alibaba")
    spec.text          # rendered: "Model Spec for Qwen ..."
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from msm_megatron.config import ConfigError

VARIABLES = ("model_name", "provider_name")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Spec:
    """A rendered spec: its text, where it came from and its content hash."""

    path: Path
    template: str
    text: str
    model_name: str
    provider_name: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_spec(path: str | Path, model_name: str, provider_name: str) -> Spec:
    """Read and render a spec.

    Raises:
        ConfigError: missing or empty file, not UTF-8, an unknown ``{placeholder}`` (with its
            line), or an empty model/provider name.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: spec file not found")
    try:
        template = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not template.strip():
        raise ConfigError(f"{path}: the spec is empty")
    for number, line in enumerate(template.splitlines(), start=1):
        for name in _PLACEHOLDER.findall(line.replace("{{", "").replace("}}", "")):
            if name not in VARIABLES:
                raise ConfigError(
                    f"{path}:{number}: unknown template variable {{{name}}}; the spec may use "
                    f"only {{model_name}} and {{provider_name}} (write literal braces as "
                    "{{ and }})")
    for label, value in (("model_name", model_name), ("provider_name", provider_name)):
        if not value or not value.strip():
            raise ConfigError(f"{label} is empty: name the model the documents are about "
                              f"(e.g. docs.{label}=...)")
    text = (template.replace("{model_name}", model_name)
            .replace("{provider_name}", provider_name).replace("{{", "{").replace("}}", "}"))
    return Spec(path, template, text, model_name, provider_name)
