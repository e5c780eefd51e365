"""Containers on prox-net: backends (Proxmox, local LXC), reservations, admission, migration."""
