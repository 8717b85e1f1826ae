from notifier.reuseport import ReusePortParser

reuseport = ReusePortParser()
