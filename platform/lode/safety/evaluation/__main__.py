"""`python -m lode.safety.evaluation`: prints the evaluation table of detectors/README.md."""
from lode.safety.evaluation import main

main()
