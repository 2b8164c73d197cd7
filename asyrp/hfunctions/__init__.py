"""h-functions, delta_h = f(h_t, t), in a one-way chain: ``modules`` (the functions) <- ``constrained`` (the fixed
layer after f that keeps delta_h in an allowed subspace) <- ``build`` (from a config) <- ``files`` (the
``hfunction.pt`` format and the official files); a composition's own intervals are part of the edit plan
(``asyrp.plan``). Library code imports from the module that holds a name; users import from here."""

from .build import (
    SPACE_MODES,
    build_hfunction,
    check_space_mode,
    hfunction_space,
    load_hfunction_weights,
    space_shape,
)
from .constrained import Constrained
from .files import (
    FORMAT,
    hfunction_from_payload,
    load_hfunction_checkpoint,
    load_official_hfunction,
    official_from_object,
    payload,
    probe_hfunction,
    read_hfunction_file,
    save_hfunction,
)
from .modules import (
    ADM_KEYS,
    DDPM_KEYS,
    Coefficients,
    Composition,
    DeltaBlock,
    GlobalDirection,
    HFunction,
    TimeWindow,
    apply_hfunction,
    n_components,
)

__all__ = [
    "HFunction",
    "DeltaBlock",
    "GlobalDirection",
    "Composition",
    "TimeWindow",
    "Constrained",
    "Coefficients",
    "DDPM_KEYS",
    "ADM_KEYS",
    "apply_hfunction",
    "n_components",
    "build_hfunction",
    "load_hfunction_weights",
    "SPACE_MODES",
    "hfunction_space",
    "space_shape",
    "check_space_mode",
    "FORMAT",
    "payload",
    "save_hfunction",
    "load_official_hfunction",
    "official_from_object",
    "read_hfunction_file",
    "probe_hfunction",
    "hfunction_from_payload",
    "load_hfunction_checkpoint",
]
