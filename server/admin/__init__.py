"""The admin listener: health, readiness, Prometheus metrics and the back-office page with its JSON API (the
page's HTML, CSS and JavaScript ship as package data in backoffice/)."""
