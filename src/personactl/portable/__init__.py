"""Persona vectors that move between tools: llama.cpp, repeng, steering-vectors, persona_vectors, plain safetensors.

One module per format (`llamacpp`, `repeng`, `steering_vectors`, `persona_vectors`, `plain`); `convention`
says what every written file records, `vector_format` what every export and import does, `registry` names
the formats and holds `export_vector` / `import_vector`. This package belongs to the core: it knows vectors
and models, nothing of judges, sweeps or capabilities.
"""

from .convention import Convention, PortableFormatError, config_fingerprint, family, model_config
from .llamacpp import ControlVectorError, llama_cpp_arch, read_control_vector, write_control_vector
from .registry import FORMATS, export_vector, import_vector, read_source, vector_format
from .repeng import to_repeng
from .steering_vectors import to_steering_vector

__all__ = [
    "FORMATS",
    "ControlVectorError",
    "Convention",
    "PortableFormatError",
    "config_fingerprint",
    "export_vector",
    "family",
    "import_vector",
    "llama_cpp_arch",
    "model_config",
    "read_control_vector",
    "read_source",
    "to_repeng",
    "to_steering_vector",
    "vector_format",
    "write_control_vector",
]
