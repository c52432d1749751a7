"""Save, load and share ReFT models: native checkpoints, validation, the Hub, pyreft, LoRA, merging.

One concept per module (files and folders are written through ``reftlab.atomic``): ``fingerprint`` (base model
identity and the load-time check), ``checkpoint`` (the native JSON + safetensors format),
``base_params`` (base parameters trained with the ReFT, e.g. a classifier head),
``modelcard`` (README.md), ``hub`` (huggingface_hub upload/download), ``pyreft_format``
(pyreft 0.1.0's layout both ways), ``lora`` (peft's adapter files), ``merge`` (folding
affine interventions into weights), ``folder`` (the save/load steps ``ReftModel`` runs).
"""

from .base_params import BASE_FILE
from .checkpoint import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, read_native
from .fingerprint import FingerprintMismatch, ModelIdentity, identify, weights_fingerprint
from .folder import LoadedReft, base_source, load_base, load_into, load_reft, resolve_source, save_reft
from .hub import download, upload_folder
from .merge import affine_parts, merge_into_base, merge_refusal
from .pyreft_format import PYREFT_KINDS, read_pyreft, write_pyreft

__all__ = [
    "BASE_FILE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "PYREFT_KINDS",
    "WEIGHTS_FILE",
    "FingerprintMismatch",
    "LoadedReft",
    "ModelIdentity",
    "affine_parts",
    "base_source",
    "download",
    "identify",
    "load_base",
    "load_into",
    "load_reft",
    "merge_into_base",
    "merge_refusal",
    "read_native",
    "read_pyreft",
    "resolve_source",
    "save_reft",
    "upload_folder",
    "weights_fingerprint",
    "write_pyreft",
]
