"""First-party plugin: the embedded default data set."""
from vlbench import hookimpl
from vlbench.data.synthscenes import SynthScenes


@hookimpl
def register_datasets(register):
    register(SynthScenes)
