"""PDE dataset generators and the dataset file format."""
