"""The training configuration: one table of options behind the YAML file, the flags and --help.

A config is a mapping of sections (``task``, ``model``, ``supervision``, ``forcing``, ``bptt``,
``optim``, ``clip``, ``train``) to keys; :data:`OPTIONS` lists every key with its type, default,
choices and help, and is the single source of the YAML schema, the command-line flags and their
``--help`` text. :func:`check_config` rejects unknown sections, keys and values; :func:`resolve`
fills the ``"auto"`` values from the task and rejects incompatible combinations, before any file
is touched or any training starts.
"""

# a facade over its modules (no __all__: rnnlab.training re-exports the public names):
# option (Option, ConfigError), model_options and run_options (the table), check, resolution
from .check import (  # noqa: F401 - re-exported
    BY_NAME,
    OPTIONS,
    RESUMABLE,
    SECTIONS,
    _suggest,
    check_config,
    check_value,
    default_config,
    diff,
    load_config_file,
    merge,
)
from .option import ConfigError, Option, _o  # noqa: F401 - re-exported
from .resolution import (  # noqa: F401 - re-exported
    make_decay,
    make_forcing,
    model_spec,
    resolve,
)
