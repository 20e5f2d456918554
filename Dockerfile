FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md topics.yaml ./
COPY schemas ./schemas
COPY streams ./streams
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT ["signalbox"]
