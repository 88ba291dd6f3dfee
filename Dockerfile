# The trackpipe image used by docker-compose.yml: one image, the command picks the role.
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY trackpipe trackpipe
COPY collector collector
COPY streams streams
COPY schemas schemas
# The collector's spool lives on a volume mounted there (see docker-compose.yml).
RUN pip install --no-cache-dir . && useradd --system trackpipe \
    && install -d -o trackpipe /var/lib/trackpipe/spool
USER trackpipe
ENTRYPOINT []
