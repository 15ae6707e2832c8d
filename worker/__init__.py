"""imagegate's Celery worker: job images in, upstream calls out, images and usage stored."""
