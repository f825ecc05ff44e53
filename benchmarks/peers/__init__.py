"""The servers roomcast is compared with, each speaking the harness's minimal protocol."""
