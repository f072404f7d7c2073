"""The shipped access policies and NDA texts, in the wheel as `broker.policies`.

The broker reads them from here when ESCROW_POLICY_DIR is unset (importlib.resources). Only the
`*.yaml` files of this folder are policies; this file is what makes the folder a package."""
