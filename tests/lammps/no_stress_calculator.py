"""EMT that implements no stress, like many ASE calculators: for a periodic box
the driver can only send a stand-in zero virial."""

from ase.calculators.emt import EMT


class NoStressEMT(EMT):
    """EMT whose ``get_stress`` raises PropertyNotImplementedError."""

    implemented_properties = ["energy", "free_energy", "energies", "forces"]
