"""Config arguments: the text after ":" in `--config=configs/x.py:arg`."""

import ml_collections


def parse_arg(arg, **defaults):
    """Parses a config argument string like "smoke" or "smoke,corpus=emodb".

    Args:
      arg: the text after ":" in `--config=configs/x.py:arg`, or None.
      **defaults: every accepted key with its default value; the value's type is
        used to convert the text (bools accept a bare key as True).

    Returns:
      A ConfigDict of the parsed values.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, text = item.partition("=")
        if key not in defaults:
            raise ValueError(
                f"config argument {key!r}: unknown; choose from {sorted(defaults)}"
            )
        kind = type(defaults[key])
        if kind is bool:
            values[key] = text.lower() not in ("0", "false", "no") if text else True
        else:
            values[key] = kind(text)
    return ml_collections.ConfigDict(values)
