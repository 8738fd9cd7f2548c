"""`edgecv benchmark`: what a model costs on this box, in three subcommands.

    models    artefact x backend x device x batch, each in a fresh process (models, measure)
    pipeline  the end-to-end video pipeline against the books' sequential loop (pipeline)
    streams   many video streams into one batcher (streams)

One child-process harness runs every isolated measurement (harness, child); report renders every
table and writes JSON/CSV/Markdown/PNG; env fingerprints the machine; cli holds the parsers.
Nothing under edgecv.runtime imports this package.
"""
