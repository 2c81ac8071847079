"""The names of the kinds of map, one spelling each, shared by the catalogue in
``tests/conftest.py`` and the crash scripts in ``scripts/`` (which run under any interpreter,
0.9.0's included, so this module imports nothing).

``conftest.py`` checks that its catalogue has exactly these kinds; a script that covers only
some of them says why it leaves the others out, so a new kind shows up in both places.
"""

KINDS = ("ragged_flat", "ragged_nested", "strings", "strings_zstd", "numpy", "records", "megatron")
