FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt requirements-ml.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only-key-not-used-at-runtime-0123456789abcdefghij \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "microverse_site.wsgi", "-b", "0.0.0.0:8000", "--workers", "3"]
