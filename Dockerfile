# tongban-gateway: one gateway process.
#
# The image holds code only: no partners.toml and no keys (demo-keys/ are published, and
# `tongban serve` refuses them off loopback anyway). Mount two volumes:
#   /srv/config  read-only: partners.toml, this gateway's signing key and its TLS
#                certificate and key (docs/configuration.md, "Transport security").
#                Private key files must be mode 0600 and readable by uid 10001
#                (chown 10001 keys/*.pem && chmod 600 keys/*.pem): serve refuses others.
#   /srv/data    writable, owned by uid 10001: set [self] data_dir = "/srv/data/{id}";
#                the SQLite store is created 0600 there.
# In partners.toml give this gateway [self.tls] and a `tls` table before binding
# grpc/http to 0.0.0.0:PORT; plaintext off loopback needs `allow_plaintext = true`.
#
#   docker run -v $PWD/config:/srv/config:ro -v tongban-data:/srv/data -p 7101:7101 \
#     -p 8101:8101 tongban-gateway --as 320100-gw
FROM python:3.11-slim
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip install --no-cache-dir '.[fast]' \
    && useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin tongban \
    && mkdir -p /srv/config /srv/data && chown tongban /srv/data
USER tongban
VOLUME ["/srv/config", "/srv/data"]
EXPOSE 7101 8101
ENTRYPOINT ["tongban", "serve", "--config", "/srv/config/partners.toml"]
