"""The runnable demos of this repository, an application on top of the library: ``eupe demo`` (the three
distillation stages on real offline teachers and OpenClipart, then k-NN). Their data paths and install hints live
in their configs (``eupe/configs/demo/``), not in the library."""
