"""nsa-fastpath's installer: the transactional core behind scripts/apply.sh (stdlib only).

Modules, one concern each:
  cli        command line, dispatch, exit codes (USAGE is the reference)
  context    settings of one run (the chosen release set, environment)
  manifest   a release's manifest (manifests/<release>.tsv) and the check of our files against it
  releases   the release sets: each file's verified bytes for a target, which set a tree fits
  delta      a release's forks as unified diffs, and the strict applier that materializes them
  series     the `git am` series of a release set (a fixed author and date: the same bytes)
  tree       a site-packages target: location, version, pip's RECORD, file states, journal,
             leftovers
  lock       one flock per installed tree
  txn        transactions whose every undo needs no free space
  signals    SIGINT/SIGTERM/SIGHUP deferred to step boundaries, SIGPIPE ignored
  output     log lines that survive a closed pipe
  faults     test-only fault injection
  survey     what a site-packages tree holds, by its files: the set that fits, what is left of
             another (SGLang upgraded, downgraded or uninstalled under it)
  preflight  checks before a site-packages run changes anything (space, permissions, refusals)
  engine     what apply and revert change, step by step, as transactions
  sitepkgs   apply / revert of a site-packages tree: the flow
  sitestatus status of a site-packages tree (and scripts/status.py's kernel report)
  gitmode    apply / revert / status of a git checkout (git am / git revert)
"""
