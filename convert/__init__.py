"""glmkit.convert — GLM-4 checkpoints in, transformers / OpenVINO / GGUF artifacts out.

The family registry (`families`) is the one home of GLM-4 facts; runtimes and benchmarks read it from here.
"""

from .errors import GlmkitError
from .families import FAMILIES, Family, detect, detect_dir
from .gguf import to_gguf
from .hf import to_hf
from .openvino import to_openvino
from .source import Source, open_source, resolve

__all__ = ["FAMILIES", "Family", "GlmkitError", "Source", "detect", "detect_dir", "open_source", "resolve", "to_gguf",
           "to_hf", "to_openvino"]
