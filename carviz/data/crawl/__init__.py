"""The Selenium image crawler: the request, its record folder, downloads and browser, engine adapters, the job."""
