# The lab's data for lab/inventories/lab_group.py: pyinfra names an inventory's own group after its
# file (`lab_group`), so group_data/lab.py alone would not reach these hosts. The same values,
# read from that file (one source: the wheelhouse, hub, model, CPU keys, edge keys).
from pathlib import Path
from runpy import run_path
from types import ModuleType

_same = {key: value for key, value in run_path(str(Path(__file__).with_name("lab.py"))).items()
         if not key.startswith("_") and not callable(value) and not isinstance(value, ModuleType)}
globals().update(_same)
__all__ = sorted(_same)  # pyinfra takes exactly these names as the group's data
