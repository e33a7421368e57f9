"""Our RecBole model plugins, one file each (registered lazily in recbole_ext.registry)."""
