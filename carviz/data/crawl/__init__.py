"""The Selenium image crawler: engine adapters and the crawl job."""
