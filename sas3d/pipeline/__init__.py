"""The end-to-end SAS pipeline (teachers -> capability -> fusion -> distillation -> evaluation) and its reports,
shared by ``sas3d demo`` and the benchmarks."""
