"""tongban-gateway: signed, routed, durable cross-region exchange for 政务服务 platforms."""

__version__ = "0.1.0"
