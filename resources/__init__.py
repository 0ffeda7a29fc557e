"""The project's data files, installed as the package ``planner.resources``.

pyproject.toml maps this folder onto that package name, so the files that ship (its
``package-data``) travel inside the wheel. Code reads them through ``planner.resource_files``.
"""
