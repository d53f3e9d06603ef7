class HomeController < ApplicationController
  def show
  end

  # A cheap route for the router's health checks.
  def up
    render plain: "ok"
  end
end
