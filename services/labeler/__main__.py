from clusterflow.runner import run_service
from services.labeler.app import bootstrap

if __name__ == "__main__":
    run_service(bootstrap)
