"""A calculator that fails the way a model runs out of device memory."""

from ase.calculators.calculator import Calculator, all_changes


class OutOfMemoryCalculator(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise MemoryError("pretend the device ran out of memory")
