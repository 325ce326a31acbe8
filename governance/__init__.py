"""Governance of RansomEye releases: the policies (``governance/policies/``) and the gates that enforce them."""
