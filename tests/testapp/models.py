"""Models the key constructor tests fingerprint and key by."""

from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=100)
    views = models.IntegerField(default=0)


class Comment(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE)
    body = models.TextField()


class FeaturedArticle(Article):
    """A proxy: rules on Article must follow its saves (the signal's sender is the proxy)."""

    class Meta:
        proxy = True
