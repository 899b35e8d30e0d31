"""Models the key constructor tests fingerprint and key by."""

from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=100)
    views = models.IntegerField(default=0)


class Comment(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE)
    body = models.TextField()


class FeaturedArticle(Article):
    """A proxy: rules on Article must follow its saves (the signal's sender is
    the proxy), and rules on it must follow saves made through Article."""

    class Meta:
        proxy = True

    @property
    def headline(self):
        """Only the proxy has it: a rule on the proxy may read it."""
        return self.title.upper()


class ReviewedArticle(Article):
    """Multi-table inheritance: a save through Article writes the
    ``testapp_article`` row a ReviewedArticle reads its title from."""

    score = models.IntegerField(default=0)


class Tag(models.Model):
    """Tags articles: ``article.tags.add(tag)`` changes neither row, only the
    link table, and Django says so with ``m2m_changed`` alone."""

    name = models.CharField(max_length=50)
    articles = models.ManyToManyField(Article, related_name="tags")
