"""fedmpi: federated learning over MPI with information-theoretic traces.

Starts from Adilova, Rosenzweig, Kamp, "Information-Theoretic Perspective of
Federated Learning" (2019). Importing fedmpi starts nothing: no MPI, no CUDA,
no seeding.
"""

__version__ = "0.1.0"
