"""darknet-prn: Darknet models (cfg + .weights) in PyTorch, faithful to Darknet layer by layer."""
from .errors import CfgError, DarknetError, WeightsError
from .graph import Network, load_network
from .threads import set_threads

__version__ = "0.1.0"


def __getattr__(name):
    # torch is imported lazily so that parsing and `summary` stay torch-free
    if name == "Darknet":
        from .model import Darknet
        return Darknet
    if name == "Detector":
        from .detect import Detector
        return Detector
    if name == "evaluate":
        from .evaluation import evaluate
        return evaluate
    raise AttributeError(name)


__all__ = ["Darknet", "Detector", "evaluate", "Network", "load_network", "set_threads", "DarknetError", "CfgError",
           "WeightsError"]
