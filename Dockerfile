# tongban-gateway: one gateway process. Mount your own partners.toml and keys over /srv.
FROM python:3.11-slim
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip install --no-cache-dir '.[fast]'
COPY partners.toml ./
COPY demo-keys ./demo-keys
EXPOSE 7101 8101
# set [[gateways]] grpc/http to 0.0.0.0:PORT in the mounted partners.toml to listen outside
CMD ["tongban", "serve", "--config", "/srv/partners.toml"]
