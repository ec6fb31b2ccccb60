"""Validates FHIR R4 Bundles (JSON files) with the fhir.resources package.

Each file must parse as an R4 (4.0.1) Bundle: every resource, element and
type checked by the package's models (required elements, value types, code
formats). Prints one line per file: its entries' resource types, or the
validation errors, and exits 1 when any file is not valid FHIR.

Usage: python validate.py BUNDLE.json...
"""

import json
import sys

import fhir.resources
from fhir.resources.bundle import Bundle


def main(paths):
    if fhir.resources.__fhir_version__ != "4.0.1":
        print(f"fhir.resources models FHIR {fhir.resources.__fhir_version__}, not R4 (4.0.1)")
        return 1
    failed = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        try:
            bundle = Bundle.parse_obj(data)
        except Exception as error:  # pydantic's ValidationError, and any other refusal
            print(f"{path}: INVALID\n{error}")
            failed += 1
            continue
        kinds = [entry.resource.resource_type for entry in bundle.entry or []]
        print(f"{path}: valid {bundle.type} of {len(kinds)}: {' '.join(kinds)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
