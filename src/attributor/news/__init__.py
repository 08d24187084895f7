"""News recommenders on MIND-format data, fake-news poisoning, and TRAK over clicks.

* :mod:`~attributor.news.mind`: read / write ``news.tsv`` and ``behaviors.tsv``;
* :mod:`~attributor.news.synthetic`: a synthetic MIND dataset with fake articles and users;
* :mod:`~attributor.news.models`: NRMS, the vocabulary and the samples;
* :mod:`~attributor.news.task`: the recommendation Task (f = the candidate's margin);
* :mod:`~attributor.news.bench`: ``attributor news bench``.
"""
